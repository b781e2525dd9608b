//! Each route's sinks' position readers, by route index (routes' names need not be
//! unique), and the one function that reads them: on assignment (`resume.rs`) and
//! before a partition is read again (`pipeline/reread.rs`).

use std::sync::Arc;

use ingest_sink_api::{OffsetMap, PositionReader, SinkError};

#[derive(Clone, Default)]
pub struct PositionReaders {
    /// Per route, a reader of each sink's positions, in the route's lane order.
    routes: Arc<Vec<Vec<Arc<dyn PositionReader>>>>,
}

impl PositionReaders {
    pub fn new(routes: Vec<Vec<Arc<dyn PositionReader>>>) -> Self {
        Self {
            routes: Arc::new(routes),
        }
    }

    /// The names of route `route`'s sinks, in lane order.
    pub fn sinks(&self, route: usize) -> Vec<String> {
        self.of(route)
            .iter()
            .map(|r| r.sink().to_string())
            .collect()
    }

    /// Each sink's positions for `partitions` (of route `route`), in lane order, read
    /// at once; the first error when a sink cannot answer.
    pub async fn read(
        &self,
        route: usize,
        partitions: &OffsetMap,
    ) -> Result<Vec<OffsetMap>, SinkError> {
        let reads = self.of(route).iter().map(|r| r.read(partitions));
        futures::future::join_all(reads).await.into_iter().collect()
    }

    fn of(&self, route: usize) -> &[Arc<dyn PositionReader>] {
        self.routes.get(route).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers one fixed position for every partition asked.
    struct At(&'static str, i64);

    #[async_trait::async_trait]
    impl PositionReader for At {
        fn sink(&self) -> &str {
            self.0
        }

        async fn read(&self, wanted: &OffsetMap) -> Result<OffsetMap, SinkError> {
            let mut out = OffsetMap::default();
            for (t, p, _) in wanted.iter() {
                out.advance(t, p, self.1);
            }
            Ok(out)
        }
    }

    /// Routes are told apart by index: two routes named alike (allowed) used to share
    /// one entry of a map by name, the second's readers answering for the first.
    #[tokio::test]
    async fn each_route_reads_its_own_sinks() {
        let readers = PositionReaders::new(vec![
            vec![Arc::new(At("a1", 5)), Arc::new(At("a2", 7))],
            vec![Arc::new(At("b1", 100))],
        ]);
        let mut wanted = OffsetMap::default();
        wanted.advance("t", 0, 0);
        let first = readers.read(0, &wanted).await.unwrap();
        let positions: Vec<Option<i64>> = first.iter().map(|k| k.get("t", 0)).collect();
        assert_eq!(positions, [Some(5), Some(7)]);
        assert_eq!(readers.sinks(1), ["b1"]);
        assert!(readers.read(2, &wanted).await.unwrap().is_empty());
    }
}

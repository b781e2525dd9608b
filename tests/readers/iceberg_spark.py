"""Independent Iceberg reader #2: Spark 3.5 + iceberg-spark-runtime 1.10 with
Java's JdbcCatalog (same catalog tables as pyiceberg / iceberg-rust SQL catalog).

  iceberg_spark.py --catalog-uri sqlite:////abs/catalog.db --warehouse file:///abs/wh \
      --catalog-name ingest --table ns.table --id-column id [--rows]

count and id_checksum both come from Spark SQL (checksum defined in
readers_common.py). Jars: $ICEBERG_SPARK_JARS (comma list) or the defaults that
deploy/local/install.sh writes under $STACK_HOME/jars. ~20 s, JVM start included.
"""
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from readers_common import (check_sqlite_exists, die, emit, iceberg_args,  # noqa: E402
                            jdbc_uri, json_safe, sort_key, sqlalchemy_uri)

STACK_JARS = os.environ.get("STACK_JARS", os.path.join(os.environ.get("STACK_HOME", "/opt/ingest-stack"), "jars"))
DEFAULT_JARS = [
    os.path.join(STACK_JARS, "iceberg-spark-runtime.jar"),
    os.path.join(STACK_JARS, "iceberg-jackson-relocated.jar"),  # see install.sh
    "/usr/share/java/sqlite-jdbc.jar",
    "/usr/share/java/postgresql.jar",
]

# sum of the first 8 bytes of sha256(string form) as unsigned 64-bit, mod 2^64.
# conv(hex, 16, 10) treats its input as unsigned 64-bit; the decimal sum cannot
# overflow below ~10^18 rows.
CHECKSUM_SQL = (
    "CAST(coalesce(pmod(sum(CAST(conv(substr(sha2(CAST({col} AS STRING), 256), 1, 16), 16, 10) AS DECIMAL(20,0))),"
    " CAST('18446744073709551616' AS DECIMAL(20,0))), 0) AS STRING)"
)


def q(ident):
    return "`" + ident.replace("`", "``") + "`"


def main():
    a = iceberg_args(__doc__)
    check_sqlite_exists(sqlalchemy_uri(a.catalog_uri))
    try:
        url, props = jdbc_uri(a.catalog_uri)
    except ValueError as e:
        die(str(e))
    jars = [j for j in os.environ.get("ICEBERG_SPARK_JARS", ",".join(DEFAULT_JARS)).split(",") if j]
    missing = [j for j in jars if not os.path.exists(j)]
    if missing:
        die(f"missing jars {missing}: run deploy/local/install.sh")

    # Collected timestamps come back as naive datetimes in the Python process's
    # local zone: pin it to UTC so rows render like pyiceberg's.
    os.environ["TZ"] = "UTC"
    time.tzset()
    from pyspark.sql import SparkSession
    from pyspark.sql.types import TimestampType

    c = a.catalog_name
    b = (SparkSession.builder.master("local[2]").appName("iceberg_spark_reader")
         .config("spark.jars", ",".join(jars))
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
         .config(f"spark.sql.catalog.{c}", "org.apache.iceberg.spark.SparkCatalog")
         .config(f"spark.sql.catalog.{c}.catalog-impl", "org.apache.iceberg.jdbc.JdbcCatalog")
         .config(f"spark.sql.catalog.{c}.uri", url)
         .config(f"spark.sql.catalog.{c}.warehouse", a.warehouse)
         .config(f"spark.sql.catalog.{c}.jdbc.schema-version", "V1"))
    for k, v in props.items():
        b = b.config(f"spark.sql.catalog.{c}.{k}", v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        ns, name = a.table.rsplit(".", 1)
        t = ".".join(q(p) for p in [c, *ns.split("."), name])
        try:
            r = spark.sql(f"SELECT count(*) AS n, {CHECKSUM_SQL.format(col=q(a.id_column))} AS s FROM {t}").collect()[0]
        except Exception as e:
            die(f"Spark cannot read {t} (catalog {url}): {str(e).splitlines()[0]}")
        try:
            ref = spark.sql(f"SELECT snapshot_id FROM {t}.refs WHERE name = 'main'").collect()
            snapshot_id = ref[0][0] if ref else None
        except Exception:
            snapshot_id = None
        out = {"reader": f"spark {spark.version}", "count": int(r["n"]), "id_checksum": str(r["s"]),
               "snapshot_id": snapshot_id}
        if a.rows:
            df = spark.sql(f"SELECT * FROM {t}")
            # TimestampType is Iceberg timestamptz: mark it UTC like pyarrow does.
            tz_cols = [f.name for f in df.schema.fields if isinstance(f.dataType, TimestampType)]
            rows = []
            for row in df.collect():
                d = row.asDict(recursive=True)
                for col in tz_cols:
                    if d[col] is not None:
                        d[col] = d[col].replace(tzinfo=datetime.timezone.utc)
                rows.append(d)
            rows.sort(key=lambda r: sort_key(r, a.id_column))
            out["rows"] = [json_safe(r) for r in rows]
        emit(out)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()

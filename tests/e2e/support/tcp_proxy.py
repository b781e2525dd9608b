"""A TCP proxy in front of a server (the stack's ClickHouse) that a test switches between
three states, without touching the server itself (other tests keep using it):

- `forward()`: bytes pass both ways (the normal state, and the state it starts in);
- `refuse()`: the listening port is closed and every open connection is reset, so
  clients get "connection refused" (ECONNREFUSED) or a reset: the server is down;
- `hang()`: a stand-in for a server that stops answering without refusing (a stopped
  process, a stuck disk, a network path that drops replies). SIGSTOP of the stack's
  ClickHouse would do it for real but would hang every other test using that server,
  hence this stand-in: new connections are still accepted (as the kernel of a stopped
  server completes handshakes), bytes already read are held, nothing is passed on in
  either direction and nothing comes back; each relay holds at most one chunk, beyond
  which the kernel's buffers fill and the sender blocks, as with a stopped server. The
  next `forward()` lets everything held go through, as the server would answer the
  requests waiting in its sockets once it runs again.

The proxy runs as threads of the test process; `url` is what the service is given.
"""
import json
import socket
import threading
import time


def config_through(setup, proxy, routes, **config):
    """A service config (conftest's `Setup.config`) whose ClickHouse is reached through
    `proxy`; the test's own queries still go to the server directly."""
    path = setup.config(routes, **config)
    written = json.loads(path.read_text())
    written["clickhouse"]["url"] = proxy.url
    path.write_text(json.dumps(written, indent=2))
    return path


class TcpProxy:
    def __init__(self, upstream_host, upstream_port, port=0, listen_host="127.0.0.1"):
        self.upstream = (upstream_host, int(upstream_port))
        self.listen_host = listen_host
        self.port = port
        self.state = "forward"
        self._open = threading.Event()   # set: bytes may pass
        self._open.set()
        self._lock = threading.Lock()
        self._conns = set()               # (client socket, upstream socket or None)
        self._listener = None
        self._accepting = None
        self._stop_accepting = threading.Event()
        self.accepted = 0

    @classmethod
    def to_url(cls, url):
        """A proxy to the server of an http://host:port URL (not started)."""
        hostport = url.split("://", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        return cls(host, int(port))

    @property
    def url(self):
        return f"http://{self.listen_host}:{self.port}"

    # -- the switch -----------------------------------------------------------------

    def start(self):
        self._listen()
        return self

    def forward(self):
        """Back to normal: listen again if refused, release everything held."""
        if self._listener is None:
            self._listen()
        self.state = "forward"
        self._open.set()

    def refuse(self):
        """Connections refused from now on; open ones reset."""
        self.state = "refuse"
        self._open.set()  # held relays wake up and find their sockets reset
        self._close_listener()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            for s in conn:
                _reset(s)

    def hang(self):
        """Connections accepted and held, nothing passed on, nothing answered."""
        self.state = "hang"
        self._open.clear()

    def stop(self):
        self.refuse()

    # -- internals ------------------------------------------------------------------

    def _listen(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.time() + 10
        while True:
            try:
                listener.bind((self.listen_host, self.port))
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        listener.listen(128)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stop_accepting = threading.Event()
        self._accepting = threading.Thread(target=self._accept_loop, args=(listener, self._stop_accepting),
                                           daemon=True, name=f"proxy-accept-{self.port}")
        self._accepting.start()

    def _close_listener(self):
        if self._listener is None:
            return
        self._stop_accepting.set()
        self._accepting.join(5)
        self._listener = None

    def _accept_loop(self, listener, stop):
        try:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                self.accepted += 1
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()
        finally:
            listener.close()

    def _serve(self, client):
        # A hung server accepts but never reads: connect upstream only once open.
        self._open.wait()
        if self.state == "refuse":
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
        except OSError:
            _reset(client)
            return
        conn = _Conn(client, upstream)
        with self._lock:
            self._conns.add(conn)
        threading.Thread(target=self._relay, args=(client, upstream, conn), daemon=True).start()
        self._relay(upstream, client, conn)

    def _relay(self, src, dst, conn):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._open.wait()
                if self.state == "refuse":
                    break
                dst.sendall(data)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            pass
        finally:
            if conn.relay_done():
                with self._lock:
                    self._conns.discard(conn)


class _Conn:
    """A client connection and its upstream one; closed when both relays ended."""

    def __init__(self, client, upstream):
        self.sockets = (client, upstream)
        self._done = 0
        self._lock = threading.Lock()

    def __iter__(self):
        return iter(self.sockets)

    def relay_done(self):
        with self._lock:
            self._done += 1
            last = self._done == 2
        if last:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass
        return last


def _reset(sock):
    """Close with RST (SO_LINGER 0): the peer sees a reset, not an orderly end; a relay
    blocked reading it wakes up."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

"""An HTTPS front for the stack's schema registry that demands credentials: Apicurio in
the stack runs without authentication or TLS, so this is the only way to give the
service's registry client a live server that checks both. A fixture by necessity:
it forwards every GET to the real registry unchanged and only adds the checks."""
import base64
import ssl
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RegistryProxy:
    def __init__(self, upstream, cert, key, username=None, password=None, token=None):
        if token is not None:
            self.expected = f"Bearer {token}"
        else:
            self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.upstream = upstream.rstrip("/")
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.headers.get("Authorization") != proxy.expected:
                    proxy.refused += 1
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error_code":401,"message":"Unauthorized"}')
                    return
                try:
                    with urllib.request.urlopen(proxy.upstream + self.path, timeout=10) as r:
                        status, body, kind = r.status, r.read(), r.headers.get("Content-Type")
                except urllib.error.HTTPError as e:
                    status, body, kind = e.code, e.read(), e.headers.get("Content-Type")
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]

    def url(self, path):
        """The proxy's URL for a path of the upstream's (`apis/ccompat/v7`)."""
        return f"https://localhost:{self.port}/{path}"

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()

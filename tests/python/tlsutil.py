"""Test certificates made at test time with the openssl command (nothing committed expires):
a CA, a server certificate for localhost/127.0.0.1 signed by it, a client certificate signed by
it, and a second CA with its own client certificate (for refusals)."""
import os
import shutil
import ssl
import subprocess
import tempfile


def _run(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_ca(d, name):
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
         "-days", "2", "-subj", f"/CN={name}", cwd=d)


def make_cert(d, name, ca, cn, san=None):
    _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
         "-subj", f"/CN={cn}", cwd=d)
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-out", f"{name}.crt", "-days", "2", "-extfile", ext, cwd=d)
    os.chmod(os.path.join(d, f"{name}.key"), 0o600)


class Certs:
    """In a fresh directory under /tmp (pytest's own are closed to other users, and Larder
    re-reads the files as nobody when the tests run as root); `remove` deletes it."""

    def __init__(self):
        d = self.dir = tempfile.mkdtemp(prefix="larder-tls-")
        os.chmod(d, 0o755)
        make_ca(d, "ca")
        make_cert(d, "server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
        make_cert(d, "client", "ca", "client")
        make_ca(d, "otherca")
        make_cert(d, "stranger", "otherca", "stranger")
        # Larder drops to nobody when the tests run as root: let it re-read its files.
        if os.getuid() == 0:
            for n in os.listdir(d):
                os.chown(os.path.join(d, n), 65534, -1)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def server_args(self, *extra):
        opts = f"ssl_chain_cert={self.path('server.crt')},ssl_key={self.path('server.key')}"
        if extra:
            opts += "," + ",".join(extra)
        return ["-Z", "-o", opts]

    def client_context(self, cert=None):
        ctx = ssl.create_default_context(cafile=self.path("ca.crt"))
        if cert:
            ctx.load_cert_chain(self.path(f"{cert}.crt"), self.path(f"{cert}.key"))
        return ctx

"""Small network helpers shared by the Python tests and the measurement scripts (no pytest)."""
import socket


def free_port():
    """A port nothing listens on right now (for servers that need one chosen up front)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


if __name__ == "__main__":
    print(free_port())

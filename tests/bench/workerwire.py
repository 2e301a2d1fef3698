"""The daemon <-> worker protocol (src/Proto/firesharp/worker/v1/worker.proto), just enough of it for the
benchmarks to drive build/firesharp-vmm as the daemon does: a 4-byte little-endian length, then that many
bytes of protobuf. Encoded and decoded by hand (a few fields), so the bench needs no protobuf package."""
import socket
import struct
import time

# field numbers, from worker.proto
REQ_CREATE, REQ_START, REQ_STATUS, REQ_CONSOLE, REQ_SHUTDOWN = 1, 2, 6, 8, 10
MSG_STATUS, MSG_ERROR, MSG_EVENT, MSG_CONSOLE = 1, 2, 3, 4
STATES = {0: "EMPTY", 1: "CREATED", 2: "RUNNING", 3: "PAUSED", 4: "STOPPING", 5: "EXITED"}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_varint(no: int, v: int) -> bytes:
    return _varint(no << 3) + _varint(v)


def _field_bytes(no: int, v: bytes) -> bytes:
    return _varint(no << 3 | 2) + _varint(len(v)) + v


def decode(buf: bytes) -> dict[int, list]:
    """Field number -> values (ints for varints, bytes for length-delimited)."""
    out: dict[int, list] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = n = 0
        while True:
            b = buf[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n
    while i < len(buf):
        key = varint()
        no, wt = key >> 3, key & 7
        if wt == 0:
            v = varint()
        elif wt == 2:
            ln = varint()
            v = buf[i:i + ln]
            i += ln
        elif wt == 1:
            v = buf[i:i + 8]
            i += 8
        elif wt == 5:
            v = buf[i:i + 4]
            i += 4
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(no, []).append(v)
    return out


def create_request(vm_id: str, kernel: str, mem_mib: int, vcpus: int = 1) -> bytes:
    m = (_field_bytes(1, vm_id.encode()) + _field_bytes(2, kernel.encode())
         + _field_varint(5, mem_mib) + _field_varint(6, vcpus))
    return _field_bytes(REQ_CREATE, m)


def empty_request(no: int) -> bytes:
    return _field_bytes(no, b"")


def console_request(replay: bool = True) -> bytes:
    return _field_bytes(REQ_CONSOLE, _field_varint(1, 1 if replay else 0))


class WorkerConnection:
    """One connection to a worker's socket."""

    def __init__(self, path: str, timeout: float, connect_deadline: float = 0.0):
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.perf_counter() >= connect_deadline:
                    raise
                time.sleep(0.002)
        s.settimeout(timeout)
        self.s = s

    def close(self) -> None:
        self.s.close()

    def send(self, payload: bytes) -> None:
        self.s.sendall(struct.pack("<I", len(payload)) + payload)

    def _exact(self, n: int) -> bytes:
        b = bytearray()
        while len(b) < n:
            chunk = self.s.recv(n - len(b))
            if not chunk:
                raise ConnectionError("the worker closed the connection")
            b += chunk
        return bytes(b)

    def recv(self) -> dict[int, list]:
        (n,) = struct.unpack("<I", self._exact(4))
        if n > 1 << 20:
            raise ValueError(f"frame of {n} bytes")
        return decode(self._exact(n))

    def call(self, payload: bytes) -> dict[int, list]:
        """Sends a request and returns the reply's WorkerStatus fields; raises on a WorkerError."""
        self.send(payload)
        msg = self.recv()
        if MSG_ERROR in msg:
            e = decode(msg[MSG_ERROR][0])
            raise RuntimeError(f"worker error {e.get(1, [0])[0]}: {e.get(3, [b''])[0].decode('utf-8', 'replace')}")
        if MSG_STATUS not in msg:
            raise RuntimeError(f"unexpected reply fields {sorted(msg)}")
        return decode(msg[MSG_STATUS][0])

    def console_until(self, text: str, timeout: float) -> str:
        """Attaches the console (with replay) and reads until `text` appears."""
        self.send(console_request(True))
        got = b""
        deadline = time.perf_counter() + timeout
        while text.encode() not in got:
            self.s.settimeout(max(0.01, deadline - time.perf_counter()))
            msg = self.recv()
            if MSG_CONSOLE in msg:
                got += decode(msg[MSG_CONSOLE][0]).get(1, [b""])[0]
        return got.decode("utf-8", "replace")


def state_name(status: dict[int, list]) -> str:
    return STATES.get(status.get(1, [0])[0], "?")

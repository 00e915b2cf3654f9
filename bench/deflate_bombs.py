"""Peak RSS and time of a real ``ztbridge up`` under concurrent deflate bombs (issue #8 item 1).

Each bomb is a valid CT header plus Pixel Data of ``--pixel-bytes`` zeros (default
2,000,000,000) in Deflated Explicit VR Little Endian, ~1.94 MB on the wire, sent byte for byte
by pynetdicom, ``--bombs`` at once on their own associations. Peak RSS is the kernel's
high-water mark (VmHWM, reset just before). With the default limits each bomb is refused
(0xA700) once it passes 200:1; ``--ratio 2000 --max-inflated-mb 4096`` lets every bomb
inflate whole (stored: that is the streaming worst case). Prints figures, asserts nothing.

    .venv/bin/python bench/deflate_bombs.py
    .venv/bin/python bench/deflate_bombs.py --ratio 2000 --max-inflated-mb 4096
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.hostile.harness import deflate_bomb, hostile_gateway, send  # noqa: E402
from tests.support.gateway_proc import running  # noqa: E402


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) << 10
    raise RuntimeError(f"no {field}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bombs", type=int, default=4)
    p.add_argument("--pixel-bytes", type=int, default=2_000_000_000)
    p.add_argument("--ratio", type=int, default=200, help="ingest.max_inflate_ratio")
    p.add_argument("--max-inflated-mb", type=int, default=2048, help="ingest.max_inflated_mb")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ztbridge-bombs-") as tmp:
        gw = hostile_gateway(
            Path(tmp),
            ZTBRIDGE_INGEST__MAX_INFLATE_RATIO=str(args.ratio),
            ZTBRIDGE_INGEST__MAX_INFLATED_MB=str(args.max_inflated_mb),
            ZTBRIDGE_LEDGER__ENABLED="false",
        )
        bombs = [deflate_bomb(args.pixel_bytes) for _ in range(args.bombs)]
        with running(gw):
            assert gw.proc is not None
            pid = gw.proc.pid
            statuses: dict[int, list[int]] = {}

            def push(i: int) -> None:
                folder = Path(tmp) / f"b{i}"
                folder.mkdir()
                statuses[i] = send(gw.port, [bombs[i]], folder, "HOSTILE")

            before = _status(pid, "VmRSS")
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            started = time.monotonic()
            threads = [threading.Thread(target=push, args=(i,)) for i in range(args.bombs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - started
            peak = _status(pid, "VmHWM")
    codes = sorted({f"0x{s:04X}" for v in statuses.values() for s in v})
    print(
        f"{args.bombs} bombs of {len(bombs[0].data) / 1e6:.2f} MB claiming"
        f" {args.pixel_bytes / 1e9:.2f} GB (ratio limit {args.ratio},"
        f" max inflated {args.max_inflated_mb} MiB): statuses {', '.join(codes)};"
        f" gateway RSS {before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB"
        f" (+{(peak - before) / 2**20:.0f} MiB); {wall:.1f} s wall"
    )


if __name__ == "__main__":
    main()

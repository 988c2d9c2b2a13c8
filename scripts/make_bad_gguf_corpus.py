"""Write the corpus of malformed GGUF files (tests/hardening/bad_gguf.py) to a folder, to try by hand.

    python scripts/make_bad_gguf_corpus.py /tmp/bad-gguf
    for f in /tmp/bad-gguf/*.gguf; do candor show "$f"; done

Each case is one `NAME.gguf`; `cases.json` says what each breaks and where candor must stop it
(preflight: candor's own check; llama.cpp: llama.cpp refuses it cleanly; template: it loads, but its
chat template is refused when rendered). `tiny-base.gguf` is the sound model they were cut from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "hardening")]

from bad_gguf import write_corpus  # noqa: E402  (after the path set-up above)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="where to write the files (created if missing)")
    args = parser.parse_args()
    written = write_corpus(args.folder)
    index = [
        {
            "file": path.name,
            "name": case.name,
            "breaks": case.breaks,
            "stage": case.stage,
            "error": case.error.__name__,
        }
        for case, path in written
    ]
    (args.folder / "cases.json").write_text(json.dumps(index, indent=2) + "\n")
    by_stage: dict[str, int] = {}
    for item in index:
        by_stage[item["stage"]] = by_stage.get(item["stage"], 0) + 1
    stages = ", ".join(f"{n} stopped at {stage}" for stage, n in sorted(by_stage.items()))
    print(f"wrote {len(index)} malformed GGUF files to {args.folder} ({stages})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

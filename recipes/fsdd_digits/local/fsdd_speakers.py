"""Print the FSDD speakers, one per line, for the leave-one-speaker-out stage.

python local/fsdd_speakers.py [--fsdd-dir DIR]
"""

from __future__ import annotations

import argparse

from asr.data.fsdd import list_recordings, locate_fsdd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd-dir", help="FSDD folder holding recordings/ (default: ../shared/data/fsdd)")
    args = parser.parse_args()
    for speaker in sorted({recording.speaker for recording in list_recordings(locate_fsdd(args.fsdd_dir))}):
        print(speaker)


if __name__ == "__main__":
    main()

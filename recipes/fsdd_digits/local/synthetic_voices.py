"""Print the English voices an optional synthesis engine can speak here (nothing when none is installed).

python local/synthetic_voices.py mbrola   # MBROLA diphone voices through eSpeak NG
python local/synthetic_voices.py flite    # Flite's voices
"""

from __future__ import annotations

import argparse

from asr.data.tts import installed_flite_voices, installed_mbrola_voices

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=("mbrola", "flite"))
    engine = parser.parse_args().engine
    print(" ".join(installed_mbrola_voices() if engine == "mbrola" else installed_flite_voices()))

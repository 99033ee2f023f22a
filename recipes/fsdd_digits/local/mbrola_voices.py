"""Print the English MBROLA voices eSpeak NG can speak on this machine (nothing when none is installed).

python local/mbrola_voices.py
"""

from __future__ import annotations

from asr.data.tts import installed_mbrola_voices

if __name__ == "__main__":
    print(" ".join(installed_mbrola_voices()))

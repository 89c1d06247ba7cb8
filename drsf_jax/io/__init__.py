"""Everything that touches files: frames, videos, prediction records, weights, outputs.

Owns: ``frames`` (uint8 / [0, 1] float conversion at every entry point), ``outputs`` (the
output-safety rule: refuse to overwrite inputs, stage to a temporary file, commit by
rename), ``checkpoints`` (converted-weights files and their checksums), ``video`` (PyAV
reader / writer: timestamps, rotation, audio, codecs), ``records`` (the schema-1
predictions JSON: build, validate, legacy import), ``samples`` (the embedded astronaut
clip and test frames).

May import: geometry.
"""

"""Measuring outputs: utility against the original, privacy against unauthorized models.

Owns: ``metrics`` (IoU, landmark px / NME, head-pose and gaze degrees, DiffScore between
two prediction records), ``privacy`` (dlib HOG/CNN detection, dlib ResNet
re-identification, galleries, the attacker models), ``guard`` (the privacy guard every
written face passes), ``visualize`` (boxes, landmarks, head-pose axes, gaze drawn on
frames).

May import: geometry, io, models, victims.
"""

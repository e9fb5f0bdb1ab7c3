"""omnijax.eval: weight-free metrics of generated SynthTalk videos, measured from pixels.

lipsync     mouth darkness vs audio loudness: peak correlation, offset, confidence
pose        hands found by colour vs the driving wrist keypoints, in pixels
appearance  identity drift (region colours vs the reference, per segment) and seams
fd          Fréchet distance of fixed random-network features (a proxy, not FVD)
plots       PNG writers: drift curves, contact sheets, training curves
constructed SynthTalk clips with one factor changed, for checking the metrics
"""

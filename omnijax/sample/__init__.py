"""Sampling: the segment program, long-video chaining, the export reader, `omnijax sample`.

    from omnijax.sample import generate, write_mp4
    frames = generate("models/s3", ref=photo, audio=wave, text="...", options=Options(steps=20))
    write_mp4("out.mp4", frames, fps=25, audio=wave)
"""

from omnijax.sample.long_video import Options, Segment, generate, generate_segments, write_mp4

__all__ = ["Options", "Segment", "generate", "generate_segments", "write_mp4"]

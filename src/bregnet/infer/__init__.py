"""Face detection, alignment, the predictor, video streaming, tracking, writers."""

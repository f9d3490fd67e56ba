"""Sources: files (NVDEC or FFmpeg), RTSP/URIs, synthetic scenes. See ``base.py`` for the contract."""

"""Camera capture (RealSense live/recorded/sim), calibration, object 6D tracking and 3D hand tracking."""

"""Worker processes as the store sees them: heartbeats, devices and the run each one holds."""

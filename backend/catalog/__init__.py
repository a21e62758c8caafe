"""What can be asked for: kinds, their spec schemas and defaults, names, presets, demos and bounds."""

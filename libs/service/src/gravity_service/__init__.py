"""What every Gravity SMS service would otherwise repeat."""

"""The collector as a GB/T 26875.3 monitoring centre, and forwarding upward (issue 16)."""

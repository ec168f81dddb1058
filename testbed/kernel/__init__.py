"""The kernel under test: a stock Debian package (default) or the user's own build."""

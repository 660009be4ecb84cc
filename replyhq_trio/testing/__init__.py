"""Applications and helpers for testing the server against official tools."""

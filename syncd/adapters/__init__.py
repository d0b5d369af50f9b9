"""One adapter per external system; each turns its client's exceptions into ours."""

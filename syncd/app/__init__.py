"""How people and systemd reach syncd: the command line, the daemon, rendering."""

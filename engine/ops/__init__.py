"""What operators drive over HTTP: the ops server, queue actions, hot reload."""

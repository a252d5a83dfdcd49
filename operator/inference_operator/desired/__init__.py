"""What a spec asks for, built without I/O: the child registry, rendering and templates, traffic routes, autoscaler objects and their signals, operator defaults, migration."""

"""pytest plugin: the fixtures triofd ships for its users' tests."""

"""Built-in stationd plugins, written against the same hook API a third party uses."""

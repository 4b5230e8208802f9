"""Privacy: right-to-erasure across every layer and export, and the retention step that purges old versions."""

"""ShapeSort: a sorting game drawn with PIL, a task that is not in the paper (docs/tasks.md walks through it)."""

"""Business logic: one service per resource; routes stay thin and repositories do the queries."""

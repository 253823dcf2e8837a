"""What runs the labs and reports on them, and what no lab imports: the runner (``python -m
labhelpers.harness.runner``), the instructor's report with the self-check lines it reads back, and the stderr
audit of executed notebooks."""

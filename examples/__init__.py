"""Worked examples; ``examples.jsonfile_store`` is the adapter docs/adapters.md builds step by step."""

"""Golden histories: real workflow histories recorded by earlier meshfleet code.

Each file under ``tests/histories/<WorkflowType>/`` is the JSON that
``WorkflowHistory.to_json()`` writes, with a ``.md`` file of the same name
that says which commit recorded it, in which state, and how. The suite
replays every one against today's workflow code (``test_golden.py``): a change
to workflow code that breaks one must be made replay-safe with
``workflow.patched`` (see the README's "Changing workflow code"). Never
re-record a golden history to make a failing replay pass.
"""

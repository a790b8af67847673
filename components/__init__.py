"""Thin Kubeflow components, one per pipeline step, each a call into the ``semivdn`` CLI.

One entry point: every step runs ``semivdn <command>`` in-process through
:func:`components.step.run_semivdn` (the CLI's own parser and handlers), so a
Kubeflow step, a DVC stage and a shell user run the same implementation; a
component only turns the handler's result into typed outputs.

The step modules hold plain Python functions (Kubeflow serializes their source
into the step, so their imports live inside them); :mod:`components.build` turns
them into lightweight components on the project image. This package module
imports nothing, so a running step that imports :mod:`components.step` does not
pull in the component-building machinery.
"""

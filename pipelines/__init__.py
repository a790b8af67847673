"""The Kubeflow pipeline (``semivdn_pipeline``) and its compile/submit/schedule/run-local actions (``cli``)."""

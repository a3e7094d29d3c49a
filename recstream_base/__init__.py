"""The bottom layer every recstream package stands on, importing nothing of ours.

The strict settings base, the command-line helper, the root exception and the id range.
"""

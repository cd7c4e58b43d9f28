"""The examples of ``../shared/seed/`` ("Understanding Chutes"), one module per example.

They are copied as written, adapted only where the document leaves a name undefined (a model loader, an input
class) or where two examples define the same endpoint (they are separate modules here). Model downloads sit
inside startup hooks, which these tests never run.
"""

"""Framework integrations of neardup (Lightning, Keras, Hugging Face ``datasets``).

Each lives in its own module and imports its framework only when that module is imported:
``import neardup.integrations`` alone imports no framework.
"""

__all__: list[str] = []

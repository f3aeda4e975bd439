"""cDCGAN on MNIST in JAX/Flax. `from gan import DigitWriter` for the Python API
(gan/writer.py); the rest is imported by module (`from gan import loop`)."""


def __getattr__(name: str):
    # Lazy: `import gan.cli` (train.py --help) must not import JAX.
    if name == "DigitWriter":
        from gan.writer import DigitWriter
        return DigitWriter
    raise AttributeError(f"module 'gan' has no attribute {name!r}")

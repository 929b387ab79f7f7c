"""Build script for the optional C extension ``monai_saliency.ops._cpu_kernels`` (metadata lives in pyproject.toml).

The extension only speeds up small CPU tensors; when no C compiler is available the build skips it with a warning
(``optional=True``) and the package falls back to its pure-torch code paths.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "monai_saliency.ops._cpu_kernels",
            sources=["monai_saliency/ops/_cpu_kernels.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)

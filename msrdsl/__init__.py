"""msrdsl: differentiable architecture search methods written as .space files."""

__version__ = "0.1.0"

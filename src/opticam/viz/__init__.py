"""Pictures: overlays of a map on its image, comparison grids, insertion / deletion curves, sanity-check
plots and grids, encodings."""

from .curves import CURVE_KINDS, area_under_curve, curves_figure, curves_rows, draw_curves, fractions
from .encode import data_uri, figure_png, png_bytes, save_figure
from .grid import GridRow, cell_title, comparison_grid
from .overlay import overlay, to_pil
from .sanity import randomization_grid, similarity_plot

__all__ = [
    "CURVE_KINDS",
    "GridRow",
    "area_under_curve",
    "cell_title",
    "comparison_grid",
    "curves_figure",
    "curves_rows",
    "data_uri",
    "draw_curves",
    "figure_png",
    "fractions",
    "overlay",
    "png_bytes",
    "randomization_grid",
    "save_figure",
    "similarity_plot",
    "to_pil",
]

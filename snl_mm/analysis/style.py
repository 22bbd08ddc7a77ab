"""One look for every figure of the package (attention maps, spectra, benchmark plots): sizes and fonts that
survive being printed in a two-column paper, a perceptual colour map with a colour bar, colour-blind safe
series colours, query points labelled ``(row, col)`` in one convention, and vector output next to the PNG.

Conventions:

* heat maps use :data:`SEQUENTIAL_CMAP` (viridis: perceptually uniform, readable in grey scale), never a
  rainbow map; every heat map gets a colour bar naming its quantity and scale;
* a point is written ``(row, col)``, integers, in pixels of the network's input (:func:`format_point`);
* series (blocks, baseline) take :func:`series_style`: the Okabe-Ito colours and one marker each, so that
  a figure stays readable in black and white;
* :func:`save_figure` writes PNG, PDF and SVG (text kept as text in the vector files).
"""
import contextlib
import os
from typing import Dict, Iterator, List, Sequence, Tuple

#: the colour map of heat maps (attention, affinities)
SEQUENTIAL_CMAP = 'viridis'
#: a diverging colour map for signed matrices
DIVERGING_CMAP = 'RdBu_r'
#: Okabe & Ito's colour-blind safe palette (black first: the baseline), then Paul Tol's muted one, so that the
#: six blocks, the family and the baseline (16 series) each get a colour of their own
SERIES_COLORS: Tuple[str, ...] = ('#000000', '#E69F00', '#56B4E9', '#009E73', '#D55E00', '#0072B2', '#CC79A7',
                                  '#F0E442', '#332288', '#88CCEE', '#44AA99', '#117733', '#999933', '#CC6677',
                                  '#882255', '#AA4499')
SERIES_MARKERS: Tuple[str, ...] = ('o', 's', '^', 'D', 'v', 'P', 'X', '*', 'h')
#: colours of query markers on images (bright, told apart by their labels as well)
QUERY_COLORS: Tuple[str, ...] = ('#ff4fa3', '#ffb000', '#37d67a', '#2ccce4', '#f47373')
#: the formats :func:`save_figure` writes by default
FORMATS: Tuple[str, ...] = ('png', 'pdf', 'svg')

RC: Dict[str, object] = {
    'font.size': 8,
    'axes.titlesize': 8,
    'axes.labelsize': 8,
    'xtick.labelsize': 7,
    'ytick.labelsize': 7,
    'legend.fontsize': 7,
    'figure.titlesize': 9,
    'axes.linewidth': 0.6,
    'lines.linewidth': 1.2,
    'lines.markersize': 4,
    'axes.grid': False,
    'grid.alpha': 0.3,
    'grid.linewidth': 0.5,
    'image.cmap': SEQUENTIAL_CMAP,
    'savefig.bbox': 'tight',
    'savefig.pad_inches': 0.02,
    'pdf.fonttype': 42,  # TrueType: text stays text in the PDF (editable, searchable)
    'svg.fonttype': 'none',
}


def pyplot():
    """matplotlib's pyplot on a file-only backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Draw the figures made inside the context with :data:`RC`."""
    plt = pyplot()
    with plt.rc_context(RC):
        yield


def series_style(index: int) -> Dict[str, str]:
    """``color`` and ``marker`` of the ``index``-th series of a figure."""
    return dict(color=SERIES_COLORS[index % len(SERIES_COLORS)], marker=SERIES_MARKERS[index % len(SERIES_MARKERS)])


def format_point(row: float, col: float) -> str:
    """A point as every figure of the package writes it: ``(row, col)``, integers, pixels of the network input."""
    return f'({int(round(row))}, {int(round(col))})'


def add_colorbar(fig, ax, mappable, label: str, shrink: float = 0.9):
    """A colour bar beside ``ax`` with its quantity and scale (``label``)."""
    bar = fig.colorbar(mappable, ax=ax, shrink=shrink, pad=0.03, fraction=0.05)
    bar.set_label(label)
    bar.ax.tick_params(labelsize=6, length=2)
    bar.outline.set_linewidth(0.4)
    return bar


def mark_query(ax, row: float, col: float, index: int, label: bool = True) -> None:
    """A query marker at ``(row, col)`` with its number, in its colour of :data:`QUERY_COLORS`."""
    color = QUERY_COLORS[index % len(QUERY_COLORS)]
    ax.scatter([col], [row], s=36, c=color, edgecolors='white', linewidths=0.8, zorder=3)
    if label:
        ax.annotate(str(index + 1), (col, row), xytext=(3, 3), textcoords='offset points', color=color,
                    fontsize=7, fontweight='bold', zorder=3)


def fit_title(text: str, width_chars: int) -> str:
    """``text`` wrapped at word boundaries to lines of at most ``width_chars`` characters, so titles fit."""
    import textwrap
    return '\n'.join(textwrap.wrap(text, width=max(8, width_chars), break_long_words=True)) or text


def save_figure(fig, path: str, formats: Sequence[str] = FORMATS, dpi: int = 200, tight: bool = True) -> List[str]:
    """Write ``fig`` as ``path`` with every extension of ``formats`` (``path``'s own extension is replaced).

    ``tight`` crops the figure to what is drawn; without it the files have exactly the figure's size.

    Returns:
        list[str]: the written files, PNG first when asked for.
    """
    stem, ext = os.path.splitext(path)
    if ext.lstrip('.').lower() in FORMATS + ('jpg', 'jpeg') and ext.lstrip('.').lower() not in formats:
        formats = (ext.lstrip('.').lower(), ) + tuple(formats)
    directory = os.path.dirname(stem)
    if directory:
        os.makedirs(directory, exist_ok=True)
    written = []
    with pyplot().rc_context({'savefig.bbox': 'tight' if tight else 'standard'}):
        for fmt in formats:
            out = f'{stem}.{fmt}'
            fig.savefig(out, dpi=dpi if fmt in ('png', 'jpg', 'jpeg') else None)
            written.append(out)
    return written

"""The ALFWorld image: a top-down floor-plan view drawn from the game's own layout data (issue 4).

The paper feeds THOR's 300x300 first-person frame. THOR downloads a Unity build at run time, which this
machine cannot do, so the image is drawn from what the game itself knows:
- the floor plan's reachable grid (alfworld's gen/layouts/FloorPlanN-layout.npy), light grey dots;
- every receptacle at its real teleport position (decoded from the PDDL location id), a square coloured by
  kind (openable: brown, appliance sink/microwave/fridge/stove: blue, surfaces and the rest: green), filled
  white while open;
- the agent: a red disc at its location, with a yellow ring around the receptacles it stands at;
- the held object: a bar along the bottom with its name (empty when the hands are free).
Everything in it is also true in the text; it adds where things are relative to each other.
"""

from __future__ import annotations

import numpy as np

from envs.render import blank_canvas, draw_text, to_array

SIZE = 300
APPLIANCES = {"sinkbasin", "microwave", "fridge", "stoveburner", "toaster", "coffeemachine", "bathtubbasin"}
OPENABLE = {"cabinet", "drawer", "fridge", "microwave", "safe", "box"}


def location_xy(raw_location_id: str) -> tuple[float, float]:
    """'loc_bar_4_bar__minus_5_bar_2_bar_30' (fast-downward's lower-cased escaped id) -> metres (1.0, -1.25)."""
    from envs.alfworld.games import unescape

    parts = unescape(raw_location_id).split("|")
    return int(parts[1]) * 0.25, int(parts[2]) * 0.25


def render_map(grid: np.ndarray, receptacles: dict[str, tuple[float, float]], agent_xy, state) -> np.ndarray:
    """`receptacles`: display name -> (x, z) metres; `state`: oracle.WorldState (for open/held/at)."""
    pts = np.concatenate([grid, np.array(list(receptacles.values()) or [[0.0, 0.0]])])
    lo, hi = pts.min(0) - 0.5, pts.max(0) + 0.5
    scale = (SIZE - 40) / max(hi - lo)

    def px(xz) -> tuple[int, int]:  # x to the right, z up
        return int(20 + (xz[0] - lo[0]) * scale), int(SIZE - 40 - (xz[1] - lo[1]) * scale)

    img = blank_canvas((255, 255, 255))
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    for p in grid:
        x, y = px(p)
        d.point((x, y), fill=(200, 200, 200))
    here = {r for r, loc in state.recep_loc.items() if loc == state.agent_at}
    for name, xz in sorted(receptacles.items()):
        x, y = px(xz)
        kind = name.rsplit(" ", 1)[0]
        colour = (150, 90, 40) if kind in OPENABLE else (40, 90, 200) if kind in APPLIANCES else (60, 150, 60)
        d.rectangle((x - 5, y - 5, x + 5, y + 5), fill=(255, 255, 255) if name in state.opened else colour)
        d.rectangle((x - 5, y - 5, x + 5, y + 5), outline=colour, width=2)
        if name in here:
            d.ellipse((x - 10, y - 10, x + 10, y + 10), outline=(230, 190, 0), width=3)
    if agent_xy is not None:
        x, y = px(agent_xy)
        d.ellipse((x - 6, y - 6, x + 6, y + 6), fill=(220, 30, 30))
    d.rectangle((0, SIZE - 30, SIZE, SIZE), fill=(235, 235, 235))
    if state.held:
        draw_text(img, (8, SIZE - 28), state.held, size=22, bold=True)
    return to_array(img)

"""The growth team's ``/dashboard``: the page (static HTML whose own script draws SVG charts),
its data endpoint, and the feed that follows the learner's loop-wide stats."""

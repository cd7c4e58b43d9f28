"""chutes.devcluster: see DESIGN.md, "Components and layout"."""

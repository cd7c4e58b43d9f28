"""chutes.runtime: see DESIGN.md, "Components and layout"."""

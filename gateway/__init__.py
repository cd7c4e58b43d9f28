"""chutes.gateway: see DESIGN.md, "Components and layout"."""

"""Image builds: the runtime wheel every image gets, the build job (pure), and the flow that runs and follows it."""

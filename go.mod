module graft

go 1.26.0

require (
	github.com/go-delve/delve v1.27.2
	github.com/stretchr/testify v1.12.1
	golang.org/x/arch v0.32.0
	golang.org/x/sys v0.49.0
)

require go.yaml.in/yaml/v3 v3.0.5

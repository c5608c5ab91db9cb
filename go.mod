module github.com/decross-store/decross-store

go 1.26.0

require (
	github.com/klauspost/compress v1.20.4
	github.com/nix-community/go-nix v0.0.0-20250101154619-4bdde671e0a1
	golang.org/x/crypto v0.59.0
	golang.org/x/sync v0.25.0
)

require golang.org/x/sys v0.50.0 // indirect

package script

import _ "embed"

// FencePrelude is the Lua source of now_us and issue_fence, the functions
// with which every script that grants something issues fencing tokens. A
// script that needs them starts with it: New(name, FencePrelude+src).
//
//go:embed fence.lua
var FencePrelude string

// Runs an Argo CD health check written in Lua the way Argo CD does (gopher-lua, the object as the
// global `obj`, the script's returned table as the health), on each JSON object read from stdin
// (one per line), and prints {"status": ..., "message": ...} per line.
//
//	lua-harness SCRIPT < objects.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	lua "github.com/yuin/gopher-lua"
)

// toLua converts decoded JSON to Lua values: objects and arrays become tables (arrays 1-based).
func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []interface{}:
		t := L.NewTable()
		for _, item := range x {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.NewTable()
		for k, item := range x {
			t.RawSetString(k, toLua(L, item))
		}
		return t
	}
	return lua.LNil
}

func run(script string, obj map[string]interface{}) (map[string]string, error) {
	// Argo CD opens only the safe libraries.
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return nil, err
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	return map[string]string{"status": ret.RawGetString("status").String(),
		"message": ret.RawGetString("message").String()}, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: lua-harness SCRIPT < objects.jsonl")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var obj map[string]interface{}
		if err := json.Unmarshal(in.Bytes(), &obj); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		health, err := run(string(script), obj)
		if err != nil {
			health = map[string]string{"status": "Error", "message": err.Error()}
		}
		if err := out.Encode(health); err != nil {
			os.Exit(1)
		}
	}
}

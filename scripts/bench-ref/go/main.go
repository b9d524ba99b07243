// Command gateway-go is a BENCHMARK REFERENCE, not a product: the part of
// the HomesteadGateway /sync protocol that homestead-bench's flood, fanout,
// big and idle scenarios use, written the usual way in Go with
// gorilla/websocket, so the C gateway can be compared with it on the same work.
//
// Implemented: the key (?api_key= or X-API-Key, else 401 before the upgrade);
// the handshake ({"type":"mod","data":{server_id,channel_id}} or
// {"type":"bot","data":{bot_id}}, answered {"status":"connected","type":...};
// 400 malformed or unknown type, 409 a bot already connected; a mod with the
// server_id of one on the same channel replaces it); messages decoded with
// encoding/json and validated like the gateway (ids 1..256 bytes without
// control characters, a mod's id and destination.channel_id its own,
// author.id and content non-empty, meta an object, ts RFC 3339); the
// outbound object (type, channel_id, msg_id, server_id, author, content,
// meta, ts, received_at, forwarded_at) serialized once per message; one ack
// per message: "completed" if a recipient took it, else "failed"; pings.
// Routing is in memory only: mod -> the bot, bot -> every mod of channel
// `id`. Not implemented: queues, durability, dedup, presence events, rate
// limits, metrics, reload.
//
// Each connection has a reader (the HTTP handler's goroutine) and a writer
// goroutine fed by a buffered channel; a recipient whose channel stays full
// for writeWait is dropped.
//
// Usage: gateway-go --port P --key K   (or HOMESTEAD_KEY); listens on 127.0.0.1.
// Build, offline against Debian's golang-github-gorilla-websocket-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gateway-go .
//
// (scripts/bench-compare.sh does this into BUILD_DIR/ref.)
package main

import (
	"crypto/subtle"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	maxMessage    = 2 << 20 // the gateway's default body_size
	handshakeWait = 60 * time.Second
	pingPeriod    = 30 * time.Second
	pongWait      = 60 * time.Second
	writeWait     = 5 * time.Second
	sendBuffer    = 256
	stamp         = "2006-01-02T15:04:05.000Z07:00"
)

type author struct {
	ID   string  `json:"id"`
	Name *string `json:"name,omitempty"`
}

type inbound struct {
	MsgID       string `json:"msg_id"`
	ID          string `json:"id"`
	Destination *struct {
		ChannelID string `json:"channel_id"`
	} `json:"destination"`
	Author  *author         `json:"author"`
	Content string          `json:"content"`
	Meta    json.RawMessage `json:"meta"`
	Ts      *string         `json:"ts"`
}

type outbound struct {
	Type        string          `json:"type"`
	ChannelID   string          `json:"channel_id"`
	MsgID       string          `json:"msg_id"`
	ServerID    string          `json:"server_id,omitempty"`
	Author      author          `json:"author"`
	Content     string          `json:"content"`
	Meta        json.RawMessage `json:"meta,omitempty"`
	Ts          string          `json:"ts"`
	ReceivedAt  string          `json:"received_at"`
	ForwardedAt string          `json:"forwarded_at"`
}

// Acks, "connected" and errors.
type reply struct {
	Status  string      `json:"status,omitempty"`
	Type    string      `json:"type,omitempty"`
	MsgID   interface{} `json:"msg_id,omitempty"`
	Message string      `json:"message,omitempty"`
	Code    int         `json:"code,omitempty"`
}

type handshake struct {
	Type string `json:"type"`
	Data struct {
		ServerID  string `json:"server_id"`
		ChannelID string `json:"channel_id"`
		BotID     string `json:"bot_id"`
	} `json:"data"`
}

type client struct {
	ws                  *websocket.Conn
	send                chan []byte
	done                chan struct{}
	once                sync.Once
	role                string // "mod" or "bot"
	serverID, channelID string
}

// The routing table: the bot, and the mods by channel then server_id.
var hub = struct {
	sync.RWMutex
	bot  *client
	mods map[string]map[string]*client
}{mods: map[string]map[string]*client{}}

var (
	apiKey []byte
	// Buffer sizes left at 0: the HTTP server's 4 kB buffers are reused.
	upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
)

func validID(s string) bool {
	if len(s) == 0 || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// encode never fails here: every value comes from a successful decode.
func encode(v interface{}) []byte {
	b, _ := json.Marshal(v)
	return b
}

func refusal(message string, code int) []byte {
	return encode(reply{Message: message, Code: code})
}

// close ends c once: a close frame 1000 (best effort), then the socket.
func (c *client) close() {
	c.once.Do(func() {
		close(c.done)
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		c.ws.Close()
	})
}

// enqueue hands b to c's writer. false if c is gone or was too slow.
func (c *client) enqueue(b []byte) bool {
	select {
	case c.send <- b:
		return true
	case <-c.done:
		return false
	default:
	}
	t := time.NewTimer(writeWait)
	defer t.Stop()
	select {
	case c.send <- b:
		return true
	case <-c.done:
		return false
	case <-t.C:
		c.close()
		return false
	}
}

func (c *client) writer() {
	ping := time.NewTicker(pingPeriod)
	defer ping.Stop()
	defer c.close()
	for {
		select {
		case b := <-c.send:
			c.ws.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				return
			}
		case <-c.done:
			return
		}
	}
}

// register adds c to the table; a non-empty result is the error to send.
func register(c *client) []byte {
	hub.Lock()
	defer hub.Unlock()
	if c.role == "bot" {
		if hub.bot != nil {
			return refusal("Bot already connected.", 409)
		}
		hub.bot = c
		return nil
	}
	ch := hub.mods[c.channelID]
	if ch == nil {
		ch = map[string]*client{}
		hub.mods[c.channelID] = ch
	}
	if old := ch[c.serverID]; old != nil {
		go old.close() // replaced by the newcomer (not under the lock)
	}
	ch[c.serverID] = c
	return nil
}

func unregister(c *client) {
	hub.Lock()
	defer hub.Unlock()
	if c.role == "bot" {
		if hub.bot == c {
			hub.bot = nil
		}
	} else if ch := hub.mods[c.channelID]; ch != nil && ch[c.serverID] == c {
		delete(ch, c.serverID)
		if len(ch) == 0 {
			delete(hub.mods, c.channelID)
		}
	}
}

// recipients are looked up under the lock; the sends happen after it.
func recipients(c *client, channelID string) []*client {
	hub.RLock()
	defer hub.RUnlock()
	if c.role == "mod" {
		if hub.bot == nil {
			return nil
		}
		return []*client{hub.bot}
	}
	out := make([]*client, 0, len(hub.mods[channelID]))
	for _, m := range hub.mods[channelID] {
		out = append(out, m)
	}
	return out
}

// handle decodes, validates, routes and acks one message from c.
func (c *client) handle(data []byte) {
	now := time.Now().UTC().Format(stamp)
	var in inbound
	err := json.Unmarshal(data, &in)
	ok := err == nil && validID(in.MsgID) && validID(in.ID) && in.Author != nil &&
		in.Author.ID != "" && (in.Author.Name == nil || *in.Author.Name != "") &&
		in.Content != "" && (len(in.Meta) == 0 || in.Meta[0] == '{' || string(in.Meta) == "null")
	if ok && in.Ts != nil {
		_, err = time.Parse(time.RFC3339, *in.Ts)
		ok = err == nil
	}
	out := outbound{Type: c.role, MsgID: in.MsgID, Content: in.Content, ReceivedAt: now, Ts: now}
	if c.role == "mod" {
		ok = ok && in.ID == c.serverID && in.Destination != nil &&
			in.Destination.ChannelID == c.channelID
		out.ChannelID, out.ServerID = c.channelID, c.serverID
	} else {
		out.ChannelID = in.ID
	}
	if !ok {
		e := reply{Message: "Malformed message.", Code: 400}
		if in.MsgID != "" {
			e.MsgID = in.MsgID
		}
		c.enqueue(encode(e))
		return
	}
	out.Author = *in.Author
	if string(in.Meta) != "null" {
		out.Meta = in.Meta
	}
	if in.Ts != nil {
		out.Ts = *in.Ts
	}
	out.ForwardedAt = time.Now().UTC().Format(stamp)
	b := encode(out)
	status := "failed"
	for _, r := range recipients(c, out.ChannelID) {
		if r.enqueue(b) {
			status = "completed"
		}
	}
	c.enqueue(encode(reply{Status: status, Type: c.role, MsgID: in.MsgID}))
}

func serveSync(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("api_key")
	if key == "" {
		key = r.Header.Get("X-API-Key")
	}
	if subtle.ConstantTimeCompare([]byte(key), apiKey) != 1 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write(refusal("Unauthorized.", 401))
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(maxMessage)
	c := &client{ws: ws, send: make(chan []byte, sendBuffer), done: make(chan struct{})}
	defer c.close()

	var hs handshake
	ws.SetReadDeadline(time.Now().Add(handshakeWait))
	_, data, err := ws.ReadMessage()
	if err != nil {
		return
	}
	var refuse []byte
	switch err = json.Unmarshal(data, &hs); {
	case err != nil:
		refuse = refusal("Malformed handshake.", 400)
	case hs.Type == "mod" && validID(hs.Data.ServerID) && validID(hs.Data.ChannelID):
		c.role, c.serverID, c.channelID = "mod", hs.Data.ServerID, hs.Data.ChannelID
	case hs.Type == "bot" && validID(hs.Data.BotID):
		c.role = "bot"
	case hs.Type == "mod" || hs.Type == "bot" || hs.Type == "":
		refuse = refusal("Malformed handshake.", 400)
	default:
		refuse = refusal("Unknown handshake.", 400)
	}
	if refuse == nil {
		refuse = register(c)
	}
	if refuse != nil {
		ws.SetWriteDeadline(time.Now().Add(writeWait))
		ws.WriteMessage(websocket.TextMessage, refuse)
		return // the deferred close sends the close frame
	}
	defer unregister(c)
	go c.writer()
	c.enqueue(encode(reply{Status: "connected", Type: c.role}))

	ws.SetReadDeadline(time.Now().Add(pongWait))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		c.handle(data)
	}
}

func main() {
	port := flag.Int("port", 3333, "port on 127.0.0.1")
	key := flag.String("key", os.Getenv("HOMESTEAD_KEY"), "API key (default $HOMESTEAD_KEY)")
	flag.Parse()
	if *key == "" {
		log.Fatal("no key: pass --key K or set HOMESTEAD_KEY")
	}
	apiKey = []byte(*key)
	http.HandleFunc("/sync", serveSync)
	log.Fatal(http.ListenAndServe("127.0.0.1:"+strconv.Itoa(*port), nil))
}
